"""Search quality: hand-written queries over real projects, judged by file and line span
(``make bench STAGE=quality``; docs/SEARCH.md says how the set was made and how it is scored)."""
