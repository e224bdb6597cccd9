import argparse
import dataclasses

import pytest

from codeindex_common import config
from codeindex_common.errors import InvalidArgument
from embed_svc.config import EmbedConfig
from orchestrator.config import OrchestratorConfig
from parser_svc.config import ParserConfig
from store_svc.config import StoreConfig

CONFIGS = [(ParserConfig, "parser"), (EmbedConfig, "embed"), (StoreConfig, "store"),
           (OrchestratorConfig, "orchestrator")]


@pytest.mark.parametrize("cls,prefix", CONFIGS)
def test_every_field_is_documented_and_its_help_names_its_variable(cls, prefix):
    docs, helps = config.field_docs(cls), config.field_help(cls, prefix)
    for f in dataclasses.fields(cls):
        assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"
        assert config.env_var(prefix, f.name) in helps[f.name], f"{cls.__name__}.{f.name}"
    assert cls.__dataclass_params__.frozen


@pytest.mark.parametrize("cls,prefix", CONFIGS[:3])
def test_the_services_share_one_server_settings_base(cls, prefix):
    assert issubclass(cls, config.ServerSettings)
    shared = {f.name for f in dataclasses.fields(config.ServerSettings)}
    assert shared <= {f.name for f in dataclasses.fields(cls)}
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, cls, prefix)
    listen = next(a for a in parser._actions if a.dest == "listen")
    assert f"CODEINDEX_{prefix.upper()}_LISTEN" in listen.help  # generated, not typed by hand


def _options(command: str) -> set[str]:
    from orchestrator.cli import _parser

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {o for a in sub._actions for o in a.option_strings} - {"-h", "--help"}


CONNECTION = {"--parser-addr", "--embed-addr", "--store-addr", "--index-dir", "--start-timeout", "--rpc-timeout",
              "--retry-seconds", "--internal-tls-ca", "--internal-tls-cert", "--internal-tls-key",
              "--internal-tls-server-name"}


def test_each_subcommand_shows_only_what_it_uses():
    assert _options("search") == CONNECTION | {"--path", "-k", "--language", "--glob", "--kind", "--symbol",
                                               "--min-score", "--mode", "--context", "--color", "--json"}
    assert _options("status") == CONNECTION | {"--path", "--json"}
    index = _options("index")
    assert CONNECTION | {"--json", "--reindex", "--parse-streams", "--queue-size", "--index-metrics-port"} <= index
    assert not index & {"--listen", "--tls-cert", "--auth-token-file", "--allowed-roots"}
    assert {"--listen", "--tls-cert", "--auth-token-file", "--allowed-roots", "--parse-streams"} <= _options("serve")


def test_a_setting_a_subcommand_does_not_show_is_still_read_from_the_environment():
    from orchestrator.cli import _parser

    args = _parser().parse_args(["search", "q"])
    cfg = config.from_namespace(OrchestratorConfig, "orchestrator", args,
                                {"CODEINDEX_ORCHESTRATOR_EMBED_STREAMS": "7", "CODEINDEX_ORCHESTRATOR_LISTEN": "x:1"})
    assert (cfg.embed_streams, cfg.listen) == (7, "x:1")


def test_flag_beats_env_beats_default():
    env = {"CODEINDEX_PARSER_WORKERS": "3", "CODEINDEX_PARSER_MAX_FILE_BYTES": "10"}
    assert config.load(ParserConfig, "parser", [], environ={}).workers == 0
    cfg = config.load(ParserConfig, "parser", [], environ=env)
    assert (cfg.workers, cfg.max_file_bytes) == (3, 10)
    cfg = config.load(ParserConfig, "parser", ["--workers", "5"], environ=env)
    assert (cfg.workers, cfg.max_file_bytes) == (5, 10)


def test_bad_value_is_a_clear_error():
    with pytest.raises(InvalidArgument, match="CODEINDEX_PARSER_WORKERS"):
        config.load(ParserConfig, "parser", [], environ={"CODEINDEX_PARSER_WORKERS": "many"})


def test_the_healthcheck_asks_a_service_where_its_listen_variable_says():
    from codeindex_common.healthcheck import listen_address, main

    assert listen_address("parser", {}) == "127.0.0.1:50051"  # the service's own default
    for cls, prefix in CONFIGS:  # the healthcheck's copy of each service's default listen address
        assert listen_address(prefix, {}) == cls().listen, prefix
    assert listen_address("embed", {"CODEINDEX_EMBED_LISTEN": "0.0.0.0:7000"}) == "127.0.0.1:7000"
    assert listen_address("store", {"CODEINDEX_STORE_LISTEN": "[::]:7001"}) == "127.0.0.1:7001"
    assert listen_address("store", {"CODEINDEX_STORE_LISTEN": "127.0.3.1:7002"}) == "127.0.3.1:7002"
    assert listen_address("orchestrator", {"CODEINDEX_ORCHESTRATOR_LISTEN": "unix:/sock/api.sock"}) == \
        "unix:/sock/api.sock"
    for argv in ([], ["127.0.0.1:1", "--of", "parser"]):  # an address or --of, not both or neither
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
