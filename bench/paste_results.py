#!/usr/bin/python3
"""make bench-readme: pastes the tables of the last `make bench` run (bench/results.md, written
by bench/run.py --markdown with its date and machine) into README.md between the markers

    <!-- bench-results:begin -->
    <!-- bench-results:end -->

so the README's performance figures are always a committed run's, never typed by hand.
Usage: paste_results.py RESULTS_MD README_MD"""

import sys

BEGIN = "<!-- bench-results:begin -->"
END = "<!-- bench-results:end -->"


def paste(readme, results):
    """README text with the text between the markers replaced by results."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start or readme.count(BEGIN) != 1 or readme.count(END) != 1:
        raise ValueError("README needs one %s line and one %s line after it" % (BEGIN, END))
    return readme[:start + len(BEGIN)] + "\n" + results.strip() + "\n" + readme[end:]


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__.splitlines()[-1])
    with open(argv[1]) as f:
        results = f.read()
    if not results.startswith("Measured "):
        sys.exit("paste_results.py: %s is not bench/run.py --markdown output" % argv[1])
    with open(argv[2]) as f:
        readme = f.read()
    try:
        new = paste(readme, results)
    except ValueError as e:
        sys.exit("paste_results.py: %s: %s" % (argv[2], e))
    with open(argv[2], "w") as f:
        f.write(new)
    print("paste_results.py: %s now shows %s" % (argv[2], results.splitlines()[0][:60]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
