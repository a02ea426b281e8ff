MANIFEST = "manifest.json"
