"""``python -m clickmodels fit ...``: lit_ifm's command line with :class:`~clickmodels.data.ClickLog` as its data."""

from lit_ifm.__main__ import main

from clickmodels.data import ClickLog

if __name__ == "__main__":
    main(data_module=ClickLog)
