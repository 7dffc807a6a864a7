import sys

from kyutai_stt.cli import main

sys.exit(main())
