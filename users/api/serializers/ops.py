from rest_framework import serializers


class HealthCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    reason = serializers.CharField(required=False, help_text="Why the check failed.")
    vendor = serializers.CharField(required=False, help_text="Database: postgresql or sqlite.")
    backend = serializers.CharField(required=False, help_text="Cache: RedisCache or LocMemCache.")
    transport = serializers.CharField(required=False, help_text="Broker: redis or filesystem.")


class SweeperCheckSerializer(HealthCheckSerializer):
    last_completed_at = serializers.DateTimeField(required=False)
    age_seconds = serializers.FloatField(required=False)
    max_age_seconds = serializers.IntegerField()
    users_marked_offline = serializers.IntegerField(required=False, help_text="By the last sweep.")
    sessions_ended = serializers.IntegerField(required=False, help_text="By the last sweep.")
    duration_ms = serializers.FloatField(required=False)


class HealthChecksSerializer(serializers.Serializer):
    database = HealthCheckSerializer()
    cache = HealthCheckSerializer()
    broker = HealthCheckSerializer()
    sweeper = SweeperCheckSerializer()


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded", "unavailable"])
    reasons = serializers.ListField(child=serializers.CharField())
    checks = HealthChecksSerializer()
