import os

from celery import Celery

# Ops run `celery -A offchat_backend worker --beat` and choose production settings by
# exporting DJANGO_SETTINGS_MODULE; with nothing set it runs on the development defaults.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "offchat_backend.settings.development")

app = Celery("offchat_backend")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
