"""`efm label`: a local labelling page over an embedding store, with a live k-NN preview.

view.py     what the page sees: windows of one year read chunk by chunk at a stride, false
            colour (PCA or three bands), the k-NN preview of a window
points.py   the points: read an existing file, check its labels, write GeoJSON in EPSG:4326
server.py   the HTTP server (stdlib) and its JSON API; the page itself is in static/
"""
