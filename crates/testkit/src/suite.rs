//! Checks on a store's conformance suite: every suite function runs on every
//! backend only if the suite's macro lists it, so a function left out of the
//! list would silently never run. Each store crate tests its own suite with
//! [`unlisted`].

use std::collections::BTreeSet;

/// The suite functions of a conformance module (`pub async fn NAME(` at the
/// start of a line) that the module's `macro_rules!` block does not name.
pub fn unlisted(conformance_src: &str) -> Vec<String> {
    let functions = conformance_src.lines().filter_map(|line| {
        let rest = line.strip_prefix("pub async fn ")?;
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        (!name.is_empty()).then_some(name)
    });
    let listed: BTreeSet<&str> = match conformance_src.find("macro_rules!") {
        Some(start) => {
            let block = &conformance_src[start..];
            let end = block.find("\n}\n").map_or(block.len(), |e| e + 2);
            block[..end]
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty())
                .collect()
        }
        None => BTreeSet::new(),
    };
    functions.filter(|f| !listed.contains(f.as_str())).collect()
}

/// A test, in the crate that invokes it, that fails when a function of the
/// conformance module whose source is given is missing from its suite
/// macro: `testkit::suite_lists_every_function!(include_str!("conformance.rs"));`
/// in the crate's `lib.rs`.
#[macro_export]
macro_rules! suite_lists_every_function {
    ($conformance_src:expr) => {
        #[cfg(test)]
        #[test]
        fn every_conformance_function_is_listed_in_the_suite_macro() {
            let unlisted = $crate::suite::unlisted($conformance_src);
            assert!(
                unlisted.is_empty(),
                "never run on any backend: {unlisted:?}"
            );
        }
    };
}

#[cfg(test)]
mod tests {
    use super::unlisted;

    #[test]
    fn finds_functions_the_macro_leaves_out() {
        let src = "macro_rules! suite {\n    () => { run!(a_case, b_case,); };\n}\n\
                   pub async fn a_case(st: &S) {}\n\
                   pub async fn b_case(st: &S) {}\n\
                   pub async fn forgotten(st: &S) {}\n\
                   async fn helper() {}\n";
        assert_eq!(unlisted(src), vec!["forgotten".to_owned()]);
        assert_eq!(
            unlisted("pub async fn lone(st: &S) {}\n"),
            vec!["lone".to_owned()]
        );
    }
}
