"""make_sampler: the Optuna sampler behind --sampler, and a clear error for a name it does not know."""
import optuna
import pytest

from search.errors import UsageError
from search.sampling import SAMPLERS, make_sampler


@pytest.mark.parametrize("name, kind", [("tpe", optuna.samplers.TPESampler), ("nsga2", optuna.samplers.NSGAIISampler),
                                        ("random", optuna.samplers.RandomSampler)])
def test_each_sampler_by_name(name, kind):
    assert name in SAMPLERS and isinstance(make_sampler(name, 0), kind)


def test_unknown_sampler_names_the_accepted_ones():
    with pytest.raises(UsageError, match=r"Unknown sampler 'bo'; accepted: tpe, nsga2, random\."):
        make_sampler("bo", 0)
