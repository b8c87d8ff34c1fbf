"""run_map drops its Reshuffle only where it spreads nothing: one in-process worker."""

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import common


@pytest.mark.parametrize(
    "flags, single",
    [
        ([], True),
        (["--runner=FnApiRunner"], True),
        (["--runner=DirectRunner", "--direct_num_workers=1"], True),
        (["--direct_num_workers=2", "--direct_running_mode=multi_processing"], False),
        (["--direct_num_workers=0"], False),  # Beam: 0 = as many workers as cores
        (["--runner=PrismRunner"], False),
        (["--runner=DataflowRunner"], False),
    ],
)
def test_single_local_worker(flags, single):
    assert common.single_local_worker(PipelineOptions(flags)) is single
