"""Pages, templates and static JS/CSS. Talks to the rest through the JSON API or services."""
