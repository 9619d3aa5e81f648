"""DeepMind's official dSprites file: its name, where it is published, and its MD5.

Plain constants, apart from the download code, so the params defaults (``bvae.config``) can
name them without every stage depending on the downloader.
"""

OFFICIAL_FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
OFFICIAL_MD5 = "7da33b31b13a06f4b04a70402ce90c2e"
OFFICIAL_URLS = (
    f"https://github.com/deepmind/dsprites-dataset/raw/master/{OFFICIAL_FILENAME}",
    "https://github.com/deepmind/dsprites-dataset/raw/fa310c66517cfc1939d77fe17c725154efc97127/"
    + OFFICIAL_FILENAME,
    f"https://raw.githubusercontent.com/deepmind/dsprites-dataset/master/{OFFICIAL_FILENAME}",
)
