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
def test_every_field_documents_its_variable(cls, prefix):
    docs = config.field_docs(cls)
    for f in dataclasses.fields(cls):
        assert config.env_var(prefix, f.name) in docs.get(f.name, ""), f"{cls.__name__}.{f.name}"
    assert cls.__dataclass_params__.frozen


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
