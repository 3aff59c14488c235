"""Rebuild every contract artifact: ``python -m contracts``."""

from contracts import build_all


def main() -> None:
    for path in build_all():
        print(f"wrote {path.relative_to(path.parents[2])}")


if __name__ == "__main__":
    main()
