//! `kubectl-kproxy`: the `kproxy` program under the kubectl plugin name, so
//! that `kubectl kproxy ...` runs it (its help then speaks of `kubectl
//! kproxy`; see [`kproxy_bin::shell::parse`]).

include!("../main.rs");
