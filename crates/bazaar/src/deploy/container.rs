//! The container image: the Dockerfile and its .dockerignore, copied from templates.
//! The other targets run the image by its conventions ([`super::IMAGE`], port
//! [`super::PORT`], entrypoint `/bazaar`, `CMD ["serve"]`, user [`super::USER_ID`],
//! `BAZAAR_DATA_DIR` at [`super::DATA_DIR`]).

use super::File;

const DOCKERFILE: &str = include_str!("templates/Dockerfile");
const DOCKERIGNORE: &str = include_str!("templates/Dockerfile.dockerignore");

pub(super) fn render() -> Vec<File> {
    vec![
        File::new("container/Dockerfile", DOCKERFILE),
        File::new("container/Dockerfile.dockerignore", DOCKERIGNORE),
    ]
}
