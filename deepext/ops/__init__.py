"""Operating a platform: `deepext doctor` (is every part reachable and usable?) and `deepext backup` /
`deepext restore` (the metadata database, the artifact store and the vector store in one archive)."""
