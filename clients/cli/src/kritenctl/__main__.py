"""`kritenctl` and `python -m kritenctl`."""

from kritenctl.app import app


def main() -> None:
    app(prog_name="kritenctl")


if __name__ == "__main__":
    main()
