from pathlib import Path
from types import SimpleNamespace

from offchat_backend.celery import app
from offchat_backend.local_state import FolderMakingScheduler, local_folders, make_local_folders


def test_beat_makes_the_folder_of_its_schedule_file_when_it_opens_it(tmp_path):
    schedule = tmp_path / "not" / "yet" / "celerybeat-schedule"
    scheduler = FolderMakingScheduler(app=app, schedule_filename=str(schedule))
    try:
        assert schedule.parent.is_dir()
        assert any(path.name.startswith("celerybeat-schedule") for path in schedule.parent.iterdir())
    finally:
        scheduler.close()


def test_the_embedded_defaults_folders_are_made_at_start_up(tmp_path):
    config = SimpleNamespace(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "a" / "db")}},
        CELERY_BROKER_URL="filesystem://",
        CELERY_BROKER_TRANSPORT_OPTIONS={
            key: str(tmp_path / "broker" / key) for key in ("data_folder_in", "processed_folder", "control_folder")
        },
        PROMETHEUS_MULTIPROC_DIR="",
    )
    make_local_folders(config=config)
    assert sorted(str(path.relative_to(tmp_path)) for path in local_folders(config=config)) == [
        "a",
        "broker/control_folder",
        "broker/data_folder_in",
        "broker/processed_folder",
    ]
    assert all(Path(path).is_dir() for path in local_folders(config=config))


def test_a_server_backed_configuration_has_no_local_folder():
    config = SimpleNamespace(
        DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "offchat"}},
        CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
        PROMETHEUS_MULTIPROC_DIR="",
    )
    assert local_folders(config=config) == []
