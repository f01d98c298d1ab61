import sys

from neuavatar.cli import main

sys.exit(main())
