"""``kitfs import``: a Hugging Face or git repository into a ModelKit in local storage.

``source`` reads the repository argument as kit does, ``hfapi`` speaks the Hugging Face Hub API
(tree listing, resolve), ``plan`` lays the files out as the layers kit's pack would write, ``scratch``
keeps the layers under construction resumable, ``fetch`` downloads one file into its place in a
layer, ``seal`` verifies every file and indexes each layer in one pass, ``hfimport`` and
``gitimport`` run the two tools, ``importer`` chooses between them.
"""
