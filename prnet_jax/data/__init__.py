"""Data: reading dataset files with checks (`readers`), images (`image_io`), meshes
(`mesh_io`), the position-map record codec (`posmap_codec`), the Florence test views
(`florence_views`), the input pipeline over TFDS records (`input_pipeline`) and the training
augmentation (`augment`)."""
