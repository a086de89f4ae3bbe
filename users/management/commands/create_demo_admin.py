from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from users.models import User


class Command(BaseCommand):
    help = "Create (or reset) the demo admin account and print its credentials. Development only."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default="admin")

    def handle(self, *args, username, password, **options):
        if not settings.DEBUG:
            raise CommandError("create_demo_admin sets a known password; it refuses to run with DEBUG off.")
        user, created = User.objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        verb = "Created" if created else "Reset"
        self.stdout.write(f"{verb} demo admin: username={username} password={password}")
