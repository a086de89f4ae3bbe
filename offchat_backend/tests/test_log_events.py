import json
import logging
import logging.config

from django.conf import settings

from offchat_backend.log_events import log_event


def test_a_line_of_key_value_pairs_with_the_fields_on_the_record(caplog):
    logger = logging.getLogger("users.test")
    with caplog.at_level("INFO", logger="users.test"):
        log_event(logger, "login", outcome="failure", username='eve "admin" =1', user_id=7)
    record = caplog.records[-1]
    assert record.getMessage() == 'event=login outcome=failure username="eve \\"admin\\" =1" user_id=7'
    assert (record.event, record.outcome, record.user_id) == ("login", "failure", 7)


def test_the_json_format_emits_one_object_per_line_with_the_fields(capsys):
    config = dict(settings.LOGGING)
    config["handlers"] = {"console": {**settings.LOGGING["handlers"]["console"], "formatter": "json"}}
    logging.config.dictConfig(config)
    try:
        log_event(logging.getLogger("users.test"), "logout", outcome="success", user_id=3)
    finally:
        logging.config.dictConfig(settings.LOGGING)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    entry = json.loads(line)
    assert entry["event"] == "logout"
    assert (entry["outcome"], entry["user_id"], entry["level"], entry["logger"]) == ("success", 3, "INFO", "users.test")
    assert entry["message"] == "event=logout outcome=success user_id=3"
