"""DSA transparency: statements of reasons per enforcing action (Art. 17, 24(5)), their revision after
human review, the Transparency Database's submission format, and the transparency report (Art. 15).
Engine-free: the engines call ``StatementBuilder`` on each emitted action."""
