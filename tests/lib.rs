//! Nothing to link: the end-to-end tests are the `[[test]]` targets beside this file.
