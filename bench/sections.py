"""One generated section of a Markdown file, replaced in place."""

import os


def splice(path, heading, section):
    """Replaces the section that starts with `heading` (up to the next `## ` heading) with
    `section`, or appends `section` when the heading is not there yet."""
    text = open(path).read() if os.path.exists(path) else ""
    start = text.find(heading)
    if start < 0:
        text = (text.rstrip() + "\n\n" if text else "") + section
    else:
        nxt = text.find("\n## ", start + len(heading))
        text = text[:start] + section.rstrip() + "\n" + ("" if nxt < 0 else text[nxt:])
    with open(path, "w") as f:
        f.write(text.rstrip() + "\n")
