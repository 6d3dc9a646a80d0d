import sys
from pathlib import Path

# the toy plugin used by core tests lives beside this file
sys.path.insert(0, str(Path(__file__).parent))
