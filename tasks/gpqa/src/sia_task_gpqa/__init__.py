"""sia task package: GPQA Diamond, built from the user's own copy of the data.

``data`` reads and checks the file ``SIA_GPQA_DATA`` names and builds the task folder in the
cache; ``scoring`` holds the scorer; ``plugin`` registers the task with sia.
"""
