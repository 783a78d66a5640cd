import socket
import subprocess
import sys
from pathlib import Path

import pytest

from uvrd.config import EX_CONFIG, SECTIONS, ConfigError
from uvrd.config.files import load


def write(tmp_path, text):
    path = tmp_path / "uvrd.toml"
    path.write_text(text)
    return path


def test_issue_keys_load_with_their_names(tmp_path):
    path = write(tmp_path, """
[kafka]
bootstrap_servers = "k1:9092,k2:9092"
security_protocol = "SASL_SSL"
sasl_mechanism = "PLAIN"
[topics]
tasks = "a.tasks"
results = "a.results"
dead_letter = "a.dlq"
[processor]
group_id = "g"
model = "UVR-MDX-NET-Inst_HQ_4.onnx"
model_dir = "/m"
spool_dir = "/s"
output_dir = "/o"
output_format = "wav"
commit = "at-least-once"
drain_timeout = 30
job_timeout = 120
""")
    c = load(path, environ={})
    assert c.kafka.bootstrap_servers == "k1:9092,k2:9092" and c.kafka.security_protocol == "SASL_SSL"
    assert (c.topics.tasks, c.topics.results, c.topics.dead_letter) == ("a.tasks", "a.results", "a.dlq")
    p = c.processor
    assert (p.group_id, p.commit, p.output_format, p.drain_timeout, p.job_timeout) == ("g", "at-least-once", "wav", 30.0, 120.0)
    assert p.spool_dir == Path("/s") and c.source == str(path)


def test_environment_overrides_single_keys(tmp_path):
    path = write(tmp_path, '[processor]\njob_timeout = 100\n')
    c = load(path, environ={"UVRD_PROCESSOR_JOB_TIMEOUT": "7.5", "UVRD_KAFKA_BOOTSTRAP_SERVERS": "x:1",
                            "UVRD_PROCESSOR_EXTRA_MODELS": "a.onnx, b.onnx", "UVRD_LOG_LEVEL": "DEBUG",
                            "UVRD_KAFKA_SSL_CHECK_HOSTNAME": "no"})
    assert c.processor.job_timeout == 7.5 and c.kafka.bootstrap_servers == "x:1"
    assert c.processor.extra_models == ("a.onnx", "b.onnx")
    assert c.processor.models[0] == c.processor.model
    assert c.kafka.ssl_check_hostname is False


def test_missing_default_file_means_defaults(tmp_path, monkeypatch):
    monkeypatch.setattr("uvrd.config.files.DEFAULT_PATH", tmp_path / "absent.toml")
    c = load(None, environ={})
    assert c.source == "built-in defaults" and c.processor.commit == "exactly-once"


@pytest.mark.parametrize("text, environ, words", [
    ("[processor\n", {}, "not valid TOML"),
    ("[nope]\nx = 1\n", {}, "unknown section [nope]"),
    ("[processor]\nmodle = 'x'\n", {}, "unknown key processor.modle"),
    ("[processor]\ncommit = 'sometimes'\n", {}, "processor.commit must be one of"),
    ("[processor]\ndelivery = 'sometimes'\n", {}, "processor.commit must be one of"),
    ("[processor]\ndelivery = 'at-least-once'\ncommit = 'exactly-once'\n", {},
     "processor.delivery and processor.commit are the same setting"),
    ("[processor]\njob_timeout = 'long'\n", {}, "processor.job_timeout must be a number"),
    ("[processor]\njob_timeout = -1\n", {}, "processor.job_timeout must be positive"),
    ("[processor]\nspool_dir = 'relative'\n", {}, "processor.spool_dir must be an absolute path"),
    ("[processor]\noutput_format = 'exe'\n", {}, "processor.output_format must be one of"),
    ("[kafka]\nsession_timeout_ms = true\n", {}, "kafka.session_timeout_ms must be an integer"),
    ("", {"UVRD_PROCESSOR_JOB_TIMEOUT": "soon"}, "UVRD_PROCESSOR_JOB_TIMEOUT must be a number"),
    ("", {"UVRD_PROCESSOR_NOPE": "1"}, "unknown key processor.nope"),
    ("[api]\nheader_timeout = 0\n", {}, "api.header_timeout must be positive"),
    ("[api]\nready_timeout = -5\n", {}, "api.ready_timeout must be positive"),
    ("[api]\nlisten = '127.0.0.1:\uff18\uff10'\n", {}, "api.listen must be HOST:PORT"),
    ("[api]\nlisten = '127.0.0.1:65536'\n", {}, "api.listen must be HOST:PORT"),
    ("[broker]\nlisten = '127.0.0.1:\u00b2'\n", {}, "broker.listen must be HOST:PORT"),
    ("[broker]\nlisten = '127.0.0.1:" + "9" * 5000 + "'\n", {}, "broker.listen must be HOST:PORT"),
    ("", {"UVRD_BROKER_LISTEN": "127.0.0.1:" + "9" * 5000}, "broker.listen must be HOST:PORT"),
    ("[uploader]\nconcurrency = 0\n", {}, "uploader.concurrency must be 1 to 256"),
    ("", {"UVRD_UPLOADER_CONCURRENCY": "1000"}, "uploader.concurrency must be 1 to 256"),
    ("[api]\nmax_files_per_request = 0\n", {}, "api.max_files_per_request must be 1 to 256"),
    ("", {"UVRD_API_MAX_FILES_PER_REQUEST": "257"}, "api.max_files_per_request must be 1 to 256"),
])
def test_bad_configuration_names_the_culprit(tmp_path, text, environ, words):
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, text), environ=environ)
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_exits_78_with_one_line(tmp_path):
    path = write(tmp_path, "[processor]\ncommit = 'maybe'\n")
    proc = subprocess.run([sys.executable, "-m", "uvrd", "processor", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == EX_CONFIG
    assert proc.stderr.count("\n") == 1 and "processor.commit must be one of" in proc.stderr
    missing = subprocess.run([sys.executable, "-m", "uvrd", "processor", "--config", str(tmp_path / "nope.toml")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == EX_CONFIG and "does not exist" in missing.stderr


def test_the_old_name_processor_delivery_still_works_with_a_warning(tmp_path):
    c = load(write(tmp_path, "[processor]\ndelivery = 'at-least-once'\n"), environ={})
    assert c.processor.commit == "at-least-once"
    assert c.deprecated == ("processor.delivery is deprecated: call it processor.commit",)
    from_env = load(write(tmp_path, ""), environ={"UVRD_PROCESSOR_DELIVERY": "at-least-once"})
    assert from_env.processor.commit == "at-least-once"
    assert from_env.deprecated == ("UVRD_PROCESSOR_DELIVERY is deprecated: call it processor.commit",)
    assert load(write(tmp_path, "[processor]\ncommit = 'at-least-once'\n"), environ={}).deprecated == ()
    # The daemon says so in one line on stderr, which the journal keeps, and still starts.
    proc = subprocess.run([sys.executable, "-c", "import sys, argparse; from uvrd.cli.startup import load_config; "
                           "load_config(argparse.Namespace(config=sys.argv[1], command='processor'))",
                           str(write(tmp_path, "[processor]\ndelivery = 'at-least-once'\n"))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stderr == "uvrd processor: configuration warning: processor.delivery is deprecated: call it processor.commit\n"


SECRET = "s3cret-Value"


@pytest.mark.parametrize("text", [
    f"[api]\ntokens = '{SECRET}'\n",
    f"[api]\nbasic_auth = '{SECRET}'\n",
    f"[api]\nbasic_auth = ['{SECRET}', 7]\n",
    f"[api]\nlink_secret = ['{SECRET}']\n",
    f"[uploader]\nwebhook_secret = ['{SECRET}']\n",
    f"[kafka]\nsasl_plain_password = ['{SECRET}']\n",
    f"[kafka]\nssl_password = {{ value = '{SECRET}' }}\n",
    f"[uploader]\nwebhook_secret = {SECRET}\n",  # unquoted: a TOML error, which names the line only
])
def test_a_secret_of_the_wrong_type_is_named_but_never_shown(tmp_path, text):
    """The error line goes to stderr and the journal: it names the key, not the value."""
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, text), environ={})
    assert SECRET not in str(e.value)
    assert "value hidden" in str(e.value) or "not valid TOML" in str(e.value)


def test_cli_config_error_keeps_the_secret_out_of_stderr(tmp_path):
    path = write(tmp_path, f"[api]\ntokens = '{SECRET}'\n")
    proc = subprocess.run([sys.executable, "-m", "uvrd", "api", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == EX_CONFIG and "api.tokens must be a list of strings" in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def test_storage_settings_are_checked_and_its_secrets_never_shown(tmp_path):
    from uvrd.config import ConfigError
    from uvrd.config.files import load

    assert load(None, environ={}).storage.backend == "local"
    with pytest.raises(ConfigError, match=r"storage.bucket must be set"):
        load(None, environ={"UVRD_STORAGE_BACKEND": "s3"})
    with pytest.raises(ConfigError, match=r"storage.presign_ttl"):
        load(None, environ={"UVRD_STORAGE_PRESIGN_TTL": "999999"})
    path = tmp_path / "c.toml"
    path.write_text('[storage]\nsecret_access_key = 12345\n')
    with pytest.raises(ConfigError) as e:
        load(path, environ={})
    assert "12345" not in str(e.value) and "value hidden" in str(e.value)


@pytest.mark.parametrize("listen, expected", [("127.0.0.1:18080", "http://127.0.0.1:18080"),
                                              ("localhost:9000", "http://localhost:9000"),
                                              ("[::1]:18080", "http://[::1]:18080")])
def test_public_url_follows_listen_unless_it_is_set(tmp_path, listen, expected):
    path = write(tmp_path, f'[api]\nlisten = "{listen}"\n')
    api = load(path, environ={}).api
    assert api.public_url == expected and not api.listens_on_wildcard
    assert load(path, environ={"UVRD_API_PUBLIC_URL": "https://uvrd.example"}).api.public_url == "https://uvrd.example"
    set_in_file = write(tmp_path, f'[api]\nlisten = "{listen}"\npublic_url = "https://uvrd.example/base"\n')
    assert load(set_in_file, environ={}).api.public_url == "https://uvrd.example/base"
    empty = write(tmp_path, "")
    assert load(empty, environ={"UVRD_API_LISTEN": "127.0.0.1:9999"}).api.public_url == "http://127.0.0.1:9999"


@pytest.mark.parametrize("listen", ["0.0.0.0:18080", "[::]:18080"])
def test_a_wildcard_listen_names_this_host_in_links(tmp_path, listen):
    api = load(write(tmp_path, f'[api]\nlisten = "{listen}"\n'), environ={}).api
    assert api.listens_on_wildcard and api.public_url == f"http://{socket.gethostname()}:18080"


def test_the_defaults_link_to_the_default_listen_address(tmp_path, monkeypatch):
    monkeypatch.setattr("uvrd.config.files.DEFAULT_PATH", tmp_path / "absent.toml")
    api = load(None, environ={}).api
    assert (api.listen, api.public_url) == ("127.0.0.1:8080", "http://127.0.0.1:8080")


def test_drop_ins_beside_the_file_replace_its_keys_in_name_order(tmp_path):
    """The package writes the secrets it generated to uvrd.toml.d/: they must win over the shipped file."""
    main = tmp_path / "uvrd.toml"
    main.write_text('[api]\ntokens = []\nlisten = "127.0.0.1:8080"\n[uploader]\nwebhook_secret = ""\n')
    (tmp_path / "uvrd.toml.d").mkdir()
    (tmp_path / "uvrd.toml.d" / "50-secrets.toml").write_text('[api]\ntokens = ["generated"]\n'
                                                               '[uploader]\nwebhook_secret = "w1"\n')
    (tmp_path / "uvrd.toml.d" / "60-model.toml").write_text('[uploader]\nwebhook_secret = "w2"\n'
                                                             '[processor]\nmodel = "m.onnx"\n')
    (tmp_path / "uvrd.toml.d" / "README").write_text("not TOML, not read")
    config = load(main, environ={})
    assert config.api.tokens == ("generated",) and config.api.listen == "127.0.0.1:8080"
    assert config.uploader.webhook_secret == "w2", "a later file wins"
    assert config.processor.model == "m.onnx"
    assert config.source == f"{main} + 50-secrets.toml + 60-model.toml"
    assert load(main, environ={"UVRD_UPLOADER_WEBHOOK_SECRET": "env"}).uploader.webhook_secret == "env"


def test_a_bad_drop_in_is_named(tmp_path):
    main = tmp_path / "uvrd.toml"
    main.write_text("")
    (tmp_path / "uvrd.toml.d").mkdir()
    (tmp_path / "uvrd.toml.d" / "50-secrets.toml").write_text("[api\n")
    with pytest.raises(ConfigError, match=r"50-secrets.toml is not valid TOML"):
        load(main, environ={})


@pytest.mark.parametrize("listen", ["9092", "localhost:", ":9092x", "h:70000"])
def test_the_brokers_listen_address_must_be_host_and_port(tmp_path, listen):
    main = tmp_path / "uvrd.toml"
    main.write_text(f'[broker]\nlisten = "{listen}"\n')
    with pytest.raises(ConfigError, match=r"broker.listen must be HOST:PORT"):
        load(main, environ={})


def test_the_shipped_file_points_at_the_single_host_broker():
    shipped = load(Path(__file__).resolve().parents[2] / "packaging" / "uvrd.toml", environ={})
    assert shipped.kafka.bootstrap_servers == shipped.broker.listen == "127.0.0.1:9092"
    assert shipped.api.tokens == () and shipped.api.link_secret == "" and shipped.uploader.webhook_secret == "", \
        "no secret is shipped: the package generates them"


@pytest.mark.parametrize("section", ["processor", "uploader", "api"])
def test_metrics_listen_is_host_port_or_empty(tmp_path, section):
    off = load(write(tmp_path, f'[{section}]\nmetrics_listen = ""\n'), environ={})
    assert getattr(off, section).metrics_listen == ""
    assert SECTIONS[section]().metrics_listen.startswith("127.0.0.1:"), "loopback by default"
    for bad in ("9470", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:９４７０"):
        with pytest.raises(ConfigError, match=f"{section}.metrics_listen must be HOST:PORT or empty"):
            load(write(tmp_path, f'[{section}]\nmetrics_listen = "{bad}"\n'), environ={})
