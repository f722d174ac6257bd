"""Lists a user reads (CLI help, the README's variants table) come from the variant and backend tables."""
from __future__ import annotations

import argparse
from pathlib import Path

from edgembed.commands import add_load_options
from edgembed.export.variants import DTYPES, FILE_FORMATS, RECIPES, markdown_table
from edgembed.runtime.backends import BACKENDS, backends_for_format
from edgembed.runtime.preference import RANKS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_load_help_names_every_variant_and_backend():
    parser = argparse.ArgumentParser()
    add_load_options(parser)
    text = " ".join(parser.format_help().split())
    for name in [*DTYPES, *BACKENDS]:
        assert name in text, name


def test_every_exported_pair_has_a_rank():
    # a pair without one is never picked unless named: adding a dtype or an engine means giving it a rank
    unranked = [(recipe.dtype, spec.name) for recipe in RECIPES for spec in backends_for_format(recipe.format)
                if (recipe.dtype, spec.name) not in RANKS]
    assert unranked == []


def test_every_recipe_writes_a_known_format_that_an_engine_runs():
    assert [r.name for r in RECIPES if r.format not in FILE_FORMATS or not backends_for_format(r.format)] == []


def test_readme_variants_table_is_the_generated_one():
    assert markdown_table() in README.read_text(), "paste `python -m edgembed.export.variants` into README.md"


def test_precision_lists_of_light_modules_are_the_runtimes():
    # the CLI parsers keep their own copy so that `--help` imports no numpy
    from edgembed.jobs import cli
    from edgembed.jobs.search_cli import SEARCH_PRECISIONS
    from edgembed.runtime.precision import PRECISIONS

    assert cli.PRECISIONS == SEARCH_PRECISIONS == PRECISIONS
