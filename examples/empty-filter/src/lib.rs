//! The cheapest possible proxy-wasm HTTP filter: every callback is the SDK's default. Envoy
//! still crosses into the VM for each of them, which is the floor any wasm filter pays.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

struct EmptyRoot;
struct EmptyHttp;

impl Context for EmptyRoot {}
impl Context for EmptyHttp {}
impl HttpContext for EmptyHttp {}

impl RootContext for EmptyRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EmptyHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(EmptyRoot) });
}}
