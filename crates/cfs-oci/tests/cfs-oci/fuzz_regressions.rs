//! Replays every input kept under `fuzz/regressions/tar_import/` through the
//! `tar_import` fuzz target's own check (`fuzz/harness/tar_import/`,
//! included here), so a fixed crash stays fixed; and shows that the check
//! notices an escape when there is one.

use crate::tar_import;
use tar_import::check::check_layers_then;
use tar_import::input::Input;

#[test]
fn tar_import_inputs_keep_everything_in_the_repository() {
    for (path, bytes) in cfs_testkit::fuzz_regressions("tar_import") {
        println!("{}", path.display());
        tar_import::check(&bytes);
    }
}

#[test]
fn tar_import_examples_encode_and_decode() {
    for (name, input) in tar_import::examples::all() {
        assert_eq!(Input::decode(&input.encode()), input, "{name}");
    }
}

fn one_file_layer() -> Vec<Vec<u8>> {
    let (_, input) = tar_import::examples::all()
        .into_iter()
        .find(|(n, _)| *n == "absolute-paths")
        .unwrap();
    input.tars()
}

#[test]
#[should_panic(expected = "the sentinel directory changed")]
fn tar_import_check_sees_a_changed_sentinel() {
    check_layers_then(&one_file_layer(), &|t| {
        std::fs::write(t.join("outside/sentinel"), b"changed").unwrap()
    });
}

#[test]
#[should_panic(expected = "new entries beside the repository")]
fn tar_import_check_sees_a_new_file_beside_the_repository() {
    check_layers_then(&one_file_layer(), &|t| {
        std::fs::write(t.join("escaped"), b"").unwrap()
    });
}

#[test]
#[should_panic(expected = "a symlink pointing out of the repository")]
fn tar_import_check_sees_a_symlink_out_of_the_repository() {
    check_layers_then(&one_file_layer(), &|t| {
        std::os::unix::fs::symlink("../../outside", t.join("repo/images/out")).unwrap()
    });
}

#[test]
#[should_panic(expected = "a hard link to a file outside the repository")]
fn tar_import_check_sees_a_hard_link_out_of_the_repository() {
    check_layers_then(&one_file_layer(), &|t| {
        std::fs::hard_link(t.join("outside/sentinel"), t.join("repo/streams/x")).unwrap()
    });
}
