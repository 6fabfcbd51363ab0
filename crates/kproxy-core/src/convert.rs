//! Kubernetes objects (YAML/JSON, `k8s-openapi` types) into the [`crate::model`].
