"""One settings scheme: shared FTI_<NAME>, one FTI_<SECTION>_ per process, a TOML file, old names.

Precedence (init > env > file), the unknown-name report, deprecated names, port 0, the topics
table, no os.environ mutation and masked secrets.
"""

from __future__ import annotations

import logging
import os
import socket
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

import click
import pytest

import fti_core.settings as settings_module
from feature_stream.health import Health, HealthServer
from feature_stream.settings import FeatureStreamSettings
from fti_cli.stack.settings import StackSettings
from fti_core.settings import CLICK_CONFIG_KEY, PROCESS_SECTIONS, FtiSettings, load_settings
from fti_core.settings_renames import RENAMED, Renamed
from inference_grpc.settings import InferenceSettings, PredictSettings
from registry.models.settings import RegistrySettings
from trainer.settings import TrainerSettings

ROOT = Path(__file__).resolve().parents[3]
BY_SECTION: dict[str, type[FtiSettings]] = {
    "WORKER": FeatureStreamSettings,
    "SERVE": InferenceSettings,
    "PREDICT": PredictSettings,
    "TRAIN": TrainerSettings,
    "PROMOTER": RegistrySettings,
    "STACK": StackSettings,
}


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about defaults and precedence: the caller's FTI_ variables must not leak in."""
    for key in list(os.environ):
        if key.startswith("FTI_"):
            monkeypatch.delenv(key)
    # Each line is said once per process; every test starts as a fresh process would.
    monkeypatch.setattr(settings_module, "_reported", set())


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fti_core.settings" and r.levelno == logging.WARNING]


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fti.toml"
    path.write_text(text)
    return path


# -- precedence and the file's shape -----------------------------------------------------------


def test_init_beats_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _toml(
        tmp_path,
        'kafka_bootstrap_servers = "file:9092"\nevents_topic = "from.file"\nredis_prefix = "file"\n'
        "[serve]\nport = 1111\nmetrics_port = 2222\nalias = 'file-alias'\n",
    )
    monkeypatch.setenv("FTI_KAFKA_BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("FTI_SERVE_PORT", "3333")
    monkeypatch.setenv("FTI_REDIS_PREFIX", "env")
    s = load_settings(InferenceSettings, cfg, port=4444, redis_prefix="init")
    assert s.port == 4444 and s.redis_prefix == "init"  # init beats env
    assert s.kafka_bootstrap_servers == "env:9092"  # env beats file
    assert (s.metrics_port, s.alias, s.events_topic) == (2222, "file-alias", "from.file")  # file beats defaults


def test_fti_config_variable_and_an_fti_table_still_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _toml(tmp_path, '[fti]\nevents_topic = "wrapped"\n[fti.worker]\napp_id = "from-table"\n')
    monkeypatch.setenv("FTI_CONFIG", str(cfg))
    s = FeatureStreamSettings()
    assert (s.events_topic, s.app_id) == ("wrapped", "from-table")


def test_fti_config_option_reaches_the_settings_through_the_click_context(tmp_path: Path) -> None:
    cfg = _toml(tmp_path, "[train]\nnum_threads = 3\n")
    with click.Context(click.Command("fti")) as ctx:
        ctx.meta[CLICK_CONFIG_KEY] = cfg
        assert load_settings(TrainerSettings).num_threads == 3
    assert load_settings(TrainerSettings).num_threads == 2  # outside the command: no file


def test_loading_with_a_config_file_leaves_os_environ_alone(tmp_path: Path) -> None:
    cfg = _toml(tmp_path, 'redis_prefix = "from-file"\n[worker]\nbatch_size = 10\n')
    before = dict(os.environ)
    s = load_settings(FeatureStreamSettings, config_file=cfg)
    with click.Context(click.Command("fti")) as ctx:
        ctx.meta[CLICK_CONFIG_KEY] = cfg
        load_settings(InferenceSettings)
    assert (s.redis_prefix, s.batch_size) == ("from-file", 10)
    assert dict(os.environ) == before


def test_an_explicit_environment_replaces_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTI_EVENTS_TOPIC", "from-os-environ")
    s = load_settings(FtiSettings, environ={"FTI_EVENTS_TOPIC": "child"})
    assert s.events_topic == "child"


def test_an_unreadable_config_file_fails_loudly(tmp_path: Path) -> None:
    bad = _toml(tmp_path, "redis_prefix = \n")
    with pytest.raises(ValueError, match="cannot read settings file"):
        load_settings(FtiSettings, bad)


def test_unknown_constructor_arguments_are_an_error() -> None:
    with pytest.raises(ValueError, match="online_store_prefix"):
        FtiSettings(online_store_prefix="x")  # type: ignore[call-arg]


# -- one prefix per process ----------------------------------------------------------------------


def test_every_process_reads_shared_names_and_its_own_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTI_REDIS_PREFIX", "shop")
    for name, value in [
        ("FTI_WORKER_APP_ID", "w"),
        ("FTI_SERVE_MODEL", "m"),
        ("FTI_PREDICT_TARGET", "h:1"),
        ("FTI_TRAIN_CODE_VERSION", "c"),
        ("FTI_PROMOTER_ACTOR", "a"),
        ("FTI_STACK_KAFKA_HEAP", "1g"),
    ]:
        monkeypatch.setenv(name, value)
    assert FeatureStreamSettings().app_id == "w"
    assert InferenceSettings().model == "m"
    assert PredictSettings().target == "h:1"
    assert TrainerSettings().code_version == "c"
    assert RegistrySettings().actor == "a"
    assert StackSettings().kafka_heap == "1g"
    assert {cls().redis_prefix for cls in BY_SECTION.values()} == {"shop"}


def test_a_settings_class_must_name_a_known_section() -> None:
    with pytest.raises(TypeError, match="env_section"):

        class _Bad(FtiSettings):
            env_section: ClassVar[str] = "NOPE"


# -- unknown names ---------------------------------------------------------------------------------


def test_unknown_variables_are_reported_once_on_one_line_with_suggestions(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FTI_KAFKA_BOOTSTRAP_SERVER", "typo:9092")
    monkeypatch.setenv("FTI_SERVE_PROT", "1")
    monkeypatch.setenv("FTI_WHATEVER", "x")
    with caplog.at_level(logging.WARNING):
        s = InferenceSettings()
        InferenceSettings()  # built again: not said again
    assert s.kafka_bootstrap_servers == "localhost:9092"
    lines = _warnings(caplog)
    assert len(lines) == 1, lines
    assert "FTI_KAFKA_BOOTSTRAP_SERVER (did you mean FTI_KAFKA_BOOTSTRAP_SERVERS?)" in lines[0]
    assert "FTI_SERVE_PROT (did you mean FTI_SERVE_PORT?)" in lines[0]
    assert "FTI_WHATEVER" in lines[0] and "\n" not in lines[0]


def test_a_misspelt_old_name_suggests_the_new_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FTI_TARGT", "h:1")
    with caplog.at_level(logging.WARNING):
        PredictSettings()
    assert "FTI_TARGT (did you mean FTI_PREDICT_TARGET?)" in _warnings(caplog)[0]


def test_known_names_of_other_processes_config_and_old_names_are_not_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setenv("FTI_CONFIG", str(_toml(tmp_path, "")))
    monkeypatch.setenv("FTI_SERVE_PORT", "1")  # the server's business
    monkeypatch.setenv("FTI_PORT", "1")  # an old name of the server's
    monkeypatch.setenv("FTI_VENV", ".venv")  # scripts/ read it
    monkeypatch.setenv("FTI_NATIVE", "0")  # fti_core.native reads it
    with caplog.at_level(logging.WARNING):
        FeatureStreamSettings()
    assert _warnings(caplog) == []


def test_unknown_config_file_keys_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = _toml(tmp_path, 'redis_prefx = "x"\n[serve]\nprot = 1\n[servee]\nport = 2\n')
    with caplog.at_level(logging.WARNING):
        load_settings(InferenceSettings, cfg)
    lines = _warnings(caplog)
    assert len(lines) == 1, lines
    assert f"unknown keys in {cfg}" in lines[0]
    assert "redis_prefx (did you mean redis_prefix?)" in lines[0]
    assert "[serve] prot (did you mean [serve] port?)" in lines[0]
    assert "[servee] port" in lines[0]


# -- deprecated names ------------------------------------------------------------------------------


def _owner(r: Renamed) -> type[FtiSettings]:
    if r.only:
        return BY_SECTION[r.only]
    name = r.new.removeprefix("FTI_")
    return next((cls for s, cls in BY_SECTION.items() if name.startswith(f"{s}_")), FtiSettings)


def _sample(cls: type[FtiSettings], field: str) -> tuple[str, Any]:
    """A valid value, different from the default, as an environment string and as parsed."""
    info = cls.model_fields[field]
    default = info.get_default(call_default_factory=True)
    kind: Any = info.annotation
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is Literal:
        choice = next(a for a in typing.get_args(kind) if a != default)
        return str(choice), choice
    samples: dict[Any, tuple[str, Any]] = {
        bool: (str(not default).lower(), not default),
        int: ("7", 7),
        float: ("2.5", 2.5),
        str: ("renamed-value", "renamed-value"),
        Path: ("/tmp/renamed.pem", Path("/tmp/renamed.pem")),
    }
    return samples[kind]


@pytest.mark.parametrize("renamed", RENAMED, ids=[r.old for r in RENAMED])
def test_each_old_name_sets_the_new_field_with_a_warning(
    renamed: Renamed, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cls = _owner(renamed)
    field = cls.env_names()[renamed.new]
    text, expected = _sample(cls, field)
    monkeypatch.setenv(renamed.old, text)
    with caplog.at_level(logging.WARNING):
        s = cls()
    assert getattr(s, field) == expected
    lines = _warnings(caplog)
    assert len(lines) == 1 and renamed.old in lines[0] and renamed.new in lines[0], lines


def test_every_renamed_setting_is_listed_in_the_changelog() -> None:
    unreleased = (ROOT / "CHANGELOG.md").read_text().split("## Unreleased", 1)[1].split("\n## ", 1)[0]
    deprecated = unreleased.split("### Deprecated", 1)[1].split("\n### ", 1)[0]
    for r in RENAMED:
        assert f"`{r.old}` → `{r.new}`" in deprecated, r.old


def test_a_new_name_wins_over_its_old_name_and_old_names_work_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FTI_PORT", "1")
    monkeypatch.setenv("FTI_SERVE_PORT", "2")
    cfg = _toml(tmp_path, 'model = "old-key"\n')
    with caplog.at_level(logging.WARNING):
        s = load_settings(InferenceSettings, cfg)
    assert (s.port, s.model) == (2, "old-key")
    assert any(f"model in {cfg} is deprecated, use [serve] model" in line for line in _warnings(caplog))


def test_the_worker_old_metrics_port_zero_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTI_FEATURES_METRICS_PORT", "0")
    s = FeatureStreamSettings()
    assert (s.metrics_enabled, s.metrics_port) == (False, 0)
    monkeypatch.setenv("FTI_FEATURES_METRICS_PORT", "9200")
    s = FeatureStreamSettings()
    assert (s.metrics_enabled, s.metrics_port) == (True, 9200)


# -- ports -----------------------------------------------------------------------------------------


def test_port_zero_is_accepted_and_disabling_is_a_separate_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTI_WORKER_METRICS_PORT", "0")
    monkeypatch.setenv("FTI_WORKER_WEB_PORT", "0")
    monkeypatch.setenv("FTI_SERVE_METRICS_PORT", "0")
    monkeypatch.setenv("FTI_SERVE_PORT", "0")
    worker, server = FeatureStreamSettings(), InferenceSettings()
    assert (worker.metrics_port, worker.web_port, server.metrics_port, server.port) == (0, 0, 0, 0)
    assert (worker.metrics_enabled, worker.web_enabled, server.metrics_enabled) == (True, False, True)
    monkeypatch.setenv("FTI_SERVE_METRICS_ENABLED", "false")
    assert InferenceSettings().metrics_enabled is False
    with pytest.raises(ValueError, match="FTI_STACK_KAFKA_CONTROLLER_PORT=0"):
        StackSettings(kafka_controller_port=0)  # written into the broker's config: must be fixed


def test_worker_metrics_on_port_zero_bind_a_free_port_and_say_which(caplog: pytest.LogCaptureFixture) -> None:
    health = Health(live_after_s=60, stall_after_s=60)
    with caplog.at_level(logging.INFO, logger="fti.worker"):
        server = HealthServer(health, "127.0.0.1", 0).start()
    try:
        assert server.port > 0
        assert f"metrics and health on port {server.port}" in caplog.text
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            pass
    finally:
        server.stop()


# -- the topics table ------------------------------------------------------------------------------


def test_one_topics_table_with_the_same_defaults_for_every_process() -> None:
    tables = {cls().topics for cls in [FtiSettings, *BY_SECTION.values()]}
    assert len(tables) == 1
    table = tables.pop()
    assert [(t.name, t.partitions, t.replication_factor) for t in table.pipeline()] == [
        ("fti.events", 4, 1),
        ("fti.events.dlq", 1, 1),
        ("fti.models", 1, 1),
    ]
    assert table.rekeyed_partitions == 4
    assert FtiSettings(events_topic_partitions=8).topics.rekeyed_partitions == 8
    assert FtiSettings(rekeyed_topic_partitions=2).topics.rekeyed_partitions == 2
    mine = FtiSettings(events_topic_partitions=6, events_topic_replication_factor=3).topics.source("rides.v1")
    assert (mine.name, mine.partitions, mine.replication_factor) == ("rides.v1", 6, 3)


def test_sections_are_the_documented_ones() -> None:
    assert set(PROCESS_SECTIONS) == set(BY_SECTION)
    for section, cls in BY_SECTION.items():
        own = cls.model_fields.keys() - FtiSettings.model_fields.keys()
        assert own and all(cls.env_name(f).startswith(f"FTI_{section}_") for f in own), cls


# -- what was here before --------------------------------------------------------------------------


def test_secrets_are_masked_in_str_repr_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    s = load_settings(redis_url="redis://:hunter2@cache:6379/0", kafka_sasl_password="s3cret")
    logging.getLogger("t").warning("settings: %s %r", s, s)
    for text in (str(s), repr(s), caplog.text, str(s.model_dump())):
        assert "hunter2" not in text and "s3cret" not in text
    assert s.confluent_config()["sasl.password"] == "s3cret"


def test_sasl_and_tls_options_reach_both_kafka_clients() -> None:
    s = FtiSettings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="u",
        kafka_sasl_password="p",  # type: ignore[arg-type]
    )
    assert s.confluent_config() == {
        "bootstrap.servers": "localhost:9092",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "u",
        "sasl.password": "p",
    }
    conf = s.aiokafka_config()
    assert conf["sasl_mechanism"] == "SCRAM-SHA-256" and conf["sasl_plain_password"] == "p"
    assert "ssl_context" not in conf


def test_settings_are_frozen() -> None:
    s = FtiSettings()
    with pytest.raises(Exception, match="frozen"):
        s.events_topic = "other"  # type: ignore[misc]


def test_store_locations_default_under_the_data_dir(tmp_path: Path) -> None:
    s = FtiSettings(data_dir=tmp_path)
    assert s.offline_root == str(tmp_path / "offline")
    assert s.registry_root == str(tmp_path / "registry")
    assert FtiSettings(registry_uri="s3://bucket/models").registry_root == "s3://bucket/models"


# -- errors a person can act on --------------------------------------------------------------------


def test_a_bad_value_names_the_variable_as_it_was_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTI_WORKER_BATCH_SIZE", "abc")
    with pytest.raises(settings_module.SettingsError) as info:
        FeatureStreamSettings()
    assert str(info.value).startswith("FTI_WORKER_BATCH_SIZE='abc': Input should be a valid integer")
    assert "\n" not in str(info.value)


def test_a_bad_secret_is_named_but_never_shown() -> None:
    with pytest.raises(settings_module.SettingsError) as info:
        FtiSettings(kafka_sasl_password=["hunter2"])  # type: ignore[arg-type]
    assert "FTI_KAFKA_SASL_PASSWORD" in str(info.value) and "hunter2" not in str(info.value)


def test_fti_says_a_bad_setting_in_one_line_and_exits_1(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FTI_")}, "FTI_SERVE_MAX_BATCH_SIZE": "abc"}
    code = "from fti_cli.main import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "serve", "--model", "m"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: SettingsError: FTI_SERVE_MAX_BATCH_SIZE='abc': Input should be a valid integer, "
        "unable to parse string as an integer"
    ]


def test_an_fti_table_and_a_top_level_table_of_one_section_are_merged(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[fti.serve]\nport = 6000\nalias = "x"\n\n[serve]\nport = 7000\n')
    s = load_settings(InferenceSettings, path)
    assert (s.port, s.alias) == (7000, "x")  # the top level wins a key set in both; nothing is dropped


def test_a_child_process_told_its_parent_reported_says_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(settings_module, "_quiet", False)
    monkeypatch.setenv("FTI_WORKER_BATCH_SIZ", "3")
    settings_module.quiet_reports()
    with caplog.at_level(logging.WARNING):
        FeatureStreamSettings()
    assert _warnings(caplog) == []
