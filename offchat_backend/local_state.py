"""The folders the settings in force write into on local disk, made by the processes that
use them when they start, never by importing settings: a production process on PostgreSQL
and Redis makes none of them."""

from pathlib import Path

from celery.beat import PersistentScheduler
from django.conf import settings


def local_folders(*, config=settings) -> list[Path]:
    """SQLite's folder (and its test database's), the filesystem broker's folders, and the
    metrics folder of several gunicorn workers: each only where the settings use it."""
    folders = []
    database = config.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        names = [database["NAME"], database.get("TEST", {}).get("NAME")]
        folders += [Path(name).parent for name in names if name and name != ":memory:"]
    if config.CELERY_BROKER_URL.startswith("filesystem://"):
        options = config.CELERY_BROKER_TRANSPORT_OPTIONS
        folders += [Path(options[key]) for key in ("data_folder_in", "processed_folder", "control_folder")]
    if config.PROMETHEUS_MULTIPROC_DIR:
        folders.append(Path(config.PROMETHEUS_MULTIPROC_DIR))
    return folders


def make_local_folders(*, config=settings) -> None:
    for folder in local_folders(config=config):
        folder.mkdir(parents=True, exist_ok=True)


class FolderMakingScheduler(PersistentScheduler):
    """Celery's file scheduler (CELERY_BEAT_SCHEDULE_FILENAME), making the file's folder
    when beat opens it, in the beat process only."""

    def setup_schedule(self):
        Path(self.schedule_filename).parent.mkdir(parents=True, exist_ok=True)
        super().setup_schedule()
