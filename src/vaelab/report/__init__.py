"""The exercise's report and the sweep's comparison page, as Markdown and HTML."""
