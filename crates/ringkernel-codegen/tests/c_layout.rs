//! Compiles the generated header with the host C compiler and checks that `offsetof`/`sizeof` of
//! every field equal the Rust layout tables (the compile itself also runs the header's
//! `static_assert`s). Skips with a message when no C compiler is found.

use ringkernel_codegen::{emit_c_header, LAYOUTS};
use std::process::Command;

#[test]
fn c_compiler_sees_rust_offsets() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if Command::new(&cc).arg("--version").output().is_err() {
        eprintln!("SKIP: no C compiler ({cc}) to check the generated header with");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ringkernel-codegen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ringkernel.h"), emit_c_header()).unwrap();
    let mut prog = String::from("#include <stdio.h>\n#include \"ringkernel.h\"\nint main(void) {\n");
    for l in LAYOUTS {
        prog.push_str(&format!("  printf(\"{0} size %zu\\n\", sizeof({0}));\n", l.name));
        for (f, _, _) in l.fields {
            prog.push_str(&format!("  printf(\"{0} {1} %zu\\n\", RK_OFFSETOF({0}, {1}));\n", l.name, f));
        }
    }
    prog.push_str("  return 0;\n}\n");
    std::fs::write(dir.join("check.c"), prog).unwrap();
    let exe = dir.join("check");
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(dir.join("check.c"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "generated header does not compile:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    let text = String::from_utf8(run.stdout).unwrap();
    let mut lines = text.lines();
    for l in LAYOUTS {
        assert_eq!(lines.next().unwrap(), format!("{} size {}", l.name, l.size));
        for (f, off, _) in l.fields {
            assert_eq!(lines.next().unwrap(), format!("{} {f} {off}", l.name));
        }
    }
    // CUDA C is C++: the header must compile (and its static_asserts hold) as C++ too.
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    if Command::new(&cxx).arg("--version").output().is_ok() {
        let out = Command::new(&cxx)
            .args(["-std=c++17", "-x", "c++", "-Wall", "-Werror", "-fsyntax-only"])
            .arg(dir.join("check.c"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "header does not compile as C++:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("SKIP: no C++ compiler ({cxx}) for the C++ check");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
