"""shipml tests; a regular package so that `tests.builders` never resolves to a site-packages `tests`."""
