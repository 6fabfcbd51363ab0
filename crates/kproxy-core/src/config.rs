//! `KubeProxyConfiguration` (kubeproxy.config.k8s.io v1alpha1 / v1alpha2).
