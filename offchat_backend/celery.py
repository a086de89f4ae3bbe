import os

from celery import Celery
from celery.signals import beat_init

# Ops run `celery -A offchat_backend worker --beat` and choose production settings by
# exporting DJANGO_SETTINGS_MODULE; with nothing set it runs on the development defaults.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "offchat_backend.settings.development")

app = Celery("offchat_backend")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@beat_init.connect
def sweep_when_beat_starts(sender, **kwargs):
    """A (re)started beat sweeps at once instead of one interval later: users left online by
    an outage go offline sooner, and /api/health/ sees a fresh sweep right after a deploy."""
    sweep = app.conf.beat_schedule["mark-inactive-users-offline"]
    app.send_task(sweep["task"], **sweep["options"])
