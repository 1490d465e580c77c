"""The homefeed page (`homefeed ui`): a web page on the real retrieval and ranking servers, for ML engineers to see
one user's inputs, candidates and feed, and to act on pins and watch the feed respond. No frontend build: the page is
static HTML and vanilla JavaScript under static/, and works offline."""
