"""``python -m hhrnet`` (used by ``torchrun ... -m hhrnet train``)."""

import sys

from hhrnet.cli.app import main

sys.exit(main())
