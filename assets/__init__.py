"""mimmia's bundled assets (installed as the package `mimmia_assets`): demo/ holds the demo's
Fashion-MNIST subset, its split manifest, its models and its precomputed scores."""
