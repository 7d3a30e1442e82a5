"""``python -m genre_classification predict ...``"""

from genre_classification.cli import main

raise SystemExit(main())
