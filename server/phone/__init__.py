"""A phone is a station (#23): the scanner page, its enrolment and its HTTPS records."""
