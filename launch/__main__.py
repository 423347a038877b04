import sys

from launch.submit import main

sys.exit(main())
