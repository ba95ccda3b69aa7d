"""The static comparison site that ``archbench report`` writes to results/report/.

collect.py reads results/ and the ledger into plain dicts, pages.py and views.py turn them into HTML,
assets.py holds the page's CSS and JavaScript, build.py writes the folder. Every page opens from the file
system: Plotly's bundle is copied next to the pages and the data sits inside each page as JSON.
"""
