"""python -m flame.data build --out-dir results/data  (see flame.data.build)."""

from flame.cli import run
from flame.data.build import main

run(main)
