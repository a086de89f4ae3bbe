from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "users"

    def ready(self):
        from offchat_backend.local_state import make_local_folders

        from . import checks, signals  # noqa: F401  registers the settings checks and signal handlers

        make_local_folders()
