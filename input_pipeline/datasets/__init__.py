"""TFDS builders of the SPGNet pair datasets; importing this package registers them.

  spg_deepfashion   DeepFashion In-shop, 256 × 256 (`deepfashion.SpgDeepfashion`)
  spg_market1501    Market-1501, 128 × 64 (`market1501.SpgMarket1501`)

Both read the official SPGNet layout from a manual directory and write array_record files; prepare
them once with `python -m input_pipeline.prepare`. Features, configs and the bad-input policy:
`input_pipeline.datasets.pairs`.
"""

from input_pipeline.datasets.deepfashion import SpgDeepfashion
from input_pipeline.datasets.market1501 import SpgMarket1501
from input_pipeline.datasets.pairs import (BadPairError, MissingFilesError, PairConfig, REPORT_FILENAME,
                                           config_name)

BUILDERS = {"deepfashion": SpgDeepfashion, "market1501": SpgMarket1501}

__all__ = ["BUILDERS", "BadPairError", "MissingFilesError", "PairConfig", "REPORT_FILENAME",
           "SpgDeepfashion", "SpgMarket1501", "config_name"]
