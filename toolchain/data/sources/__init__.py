"""One module per kind of --data source; `toolchain.data.loaders.load_data` picks the one a spec names.

Each source reads its files, numbers the labels (`toolchain.data.labels`), converts the features
(`toolchain.data.features`), splits the rows (`toolchain.data.splits`) and builds the `Dataset`
(`toolchain.data.assemble`). Only numpy is imported at module level.
"""

NAMED_SETS = ("digits", "breast-cancer", "fashion-mnist")  # --data names cwtool reads itself
KNOWN_SOURCES = (
    "give digits, breast-cancer, fashion-mnist, a .npz file, a .csv file, "
    "a folder of idx files or an ImageFolder folder"
)
"""What --data accepts: the end of every error that refuses a spec."""
