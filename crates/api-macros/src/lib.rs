//! Proc macros fed by the generated lists in `cuda-types`
//! (`with_cuda_functions!` / `with_nvml_functions!`). Each list hands every
//! prototype of its header to one of these, so no other file repeats the
//! signatures:
//!
//! - [`export_functions`]: the cdylib exports. Implemented names forward to a
//!   Rust function through a panic boundary; every other name becomes a stub
//!   that reports NOT_SUPPORTED and logs its name once.
//! - [`driver_table`]: a struct of optional function pointers resolved by
//!   name from a loaded driver (the host's view of libcuda or vgpu-emu).

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use std::collections::BTreeMap;
use syn::parse::{Parse, ParseStream};
use syn::{braced, FnArg, Ident, Pat, Path, Signature, Token};

struct Prototypes(Vec<Signature>);

impl Parse for Prototypes {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let sig: Signature = input.parse()?;
            input.parse::<Token![;]>()?;
            out.push(sig);
        }
        Ok(Prototypes(out))
    }
}

/// What an implemented name forwards to: a function, and constant arguments
/// appended after the C arguments (`name => f[Null::PerThread]`), so the
/// variants of one entry point that differ only in such a constant (the
/// `_ptsz`/`_ptds` per-thread-stream exports) share one implementation.
struct Target {
    path: Path,
    extra: Vec<syn::Expr>,
}

/// `key = path,` pairs followed by an optional `implemented { name => path, ... }`.
struct ExportArgs {
    settings: BTreeMap<String, Path>,
    implemented: Vec<(Ident, Target)>,
}

impl Parse for ExportArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut settings = BTreeMap::new();
        let mut implemented = Vec::new();
        while !input.is_empty() {
            let key: Ident = input.parse()?;
            if key == "implemented" {
                let body;
                braced!(body in input);
                while !body.is_empty() {
                    let name: Ident = body.parse()?;
                    body.parse::<Token![=>]>()?;
                    let path: Path = body.parse()?;
                    let mut extra = Vec::new();
                    if body.peek(syn::token::Bracket) {
                        let args;
                        syn::bracketed!(args in body);
                        extra = args
                            .parse_terminated(syn::Expr::parse, Token![,])?
                            .into_iter()
                            .collect();
                    }
                    implemented.push((name, Target { path, extra }));
                    if body.peek(Token![,]) {
                        body.parse::<Token![,]>()?;
                    }
                }
            } else {
                input.parse::<Token![=]>()?;
                let value: Path = input.parse()?;
                settings.insert(key.to_string(), value);
            }
            if input.peek(Token![,]) {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(ExportArgs {
            settings,
            implemented,
        })
    }
}

struct Invocation<A> {
    args: A,
    prototypes: Prototypes,
}

impl<A: Parse> Parse for Invocation<A> {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let body;
        braced!(body in input);
        let args = body.parse()?;
        let prototypes = input.parse()?;
        Ok(Invocation { args, prototypes })
    }
}

fn setting<'a>(args: &'a ExportArgs, key: &str) -> syn::Result<&'a Path> {
    args.settings
        .get(key)
        .ok_or_else(|| syn::Error::new(Span::call_site(), format!("missing `{key} = ...`")))
}

fn arg_names(sig: &Signature) -> Vec<Ident> {
    sig.inputs
        .iter()
        .enumerate()
        .map(|(i, arg)| match arg {
            FnArg::Typed(t) => match &*t.pat {
                Pat::Ident(p) => p.ident.clone(),
                _ => format_ident!("arg{}", i),
            },
            FnArg::Receiver(_) => format_ident!("arg{}", i),
        })
        .collect()
}

/// Exports every prototype of the list as `#[no_mangle] extern "C"`.
///
/// ```ignore
/// cuda_types::with_cuda_functions!(api_macros::export_functions {
///     boundary = crate::ffi::boundary,          // fn(&'static str, impl FnOnce() -> Result<(), R>) -> R
///     not_supported = crate::ffi::not_supported, // fn(&'static str) -> R
///     lookup = exported_symbol,                  // generated: fn(&[u8]) -> Option<*const c_void>
///     implemented {
///         cuInit => crate::init::init,
///         cuLaunchKernel => crate::launch::launch_kernel[Null::Legacy],
///         cuLaunchKernel_ptsz => crate::launch::launch_kernel[Null::PerThread],
///     }
/// });
/// ```
/// An implementation takes the C arguments in order, then the bracketed
/// constants if any, and returns `Result<(), R>`; it may be an `unsafe fn`. Naming a function the list does
/// not contain is a compile error, so the status list cannot drift from the
/// header. Also generated: `IMPLEMENTED` and `NOT_SUPPORTED`, the two halves
/// of the list by name.
#[proc_macro]
pub fn export_functions(input: TokenStream) -> TokenStream {
    let inv = syn::parse_macro_input!(input as Invocation<ExportArgs>);
    match expand_exports(inv) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand_exports(inv: Invocation<ExportArgs>) -> syn::Result<TokenStream2> {
    let boundary = setting(&inv.args, "boundary")?;
    let not_supported = setting(&inv.args, "not_supported")?;
    let lookup = setting(&inv.args, "lookup")?;
    let mut implemented: BTreeMap<String, &Target> = BTreeMap::new();
    for (name, target) in &inv.args.implemented {
        if implemented.insert(name.to_string(), target).is_some() {
            return Err(syn::Error::new(name.span(), "listed twice"));
        }
    }
    let known: std::collections::BTreeSet<String> = inv
        .prototypes
        .0
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    for (name, _) in &inv.args.implemented {
        if !known.contains(&name.to_string()) {
            return Err(syn::Error::new(
                name.span(),
                "not a function of the pinned header",
            ));
        }
    }

    let mut items = Vec::new();
    let mut arms = Vec::new();
    let mut done_names = Vec::new();
    let mut stub_names = Vec::new();
    for sig in &inv.prototypes.0 {
        let name = &sig.ident;
        let name_str = name.to_string();
        let ret = &sig.output;
        let names = arg_names(sig);
        let types: Vec<_> = sig
            .inputs
            .iter()
            .filter_map(|a| match a {
                FnArg::Typed(t) => Some(&t.ty),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let byte_name = syn::LitByteStr::new(name_str.as_bytes(), name.span());
        arms.push(quote! { #byte_name => Some(#name as *const ::core::ffi::c_void), });
        if let Some(target) = implemented.get(&name_str) {
            let path = &target.path;
            let extra = &target.extra;
            done_names.push(name_str.clone());
            items.push(quote! {
                #[no_mangle]
                #[allow(non_snake_case, unused_unsafe, clippy::missing_safety_doc)]
                pub unsafe extern "C" fn #name(#(#names: #types),*) #ret {
                    #boundary(#name_str, move || unsafe { #path(#(#names,)* #(#extra),*) })
                }
            });
        } else {
            stub_names.push(name_str.clone());
            items.push(quote! {
                #[no_mangle]
                #[allow(non_snake_case, clippy::missing_safety_doc)]
                pub unsafe extern "C" fn #name(#(_: #types),*) #ret {
                    static LOGGED: ::core::sync::atomic::AtomicBool =
                        ::core::sync::atomic::AtomicBool::new(false);
                    #not_supported(#name_str, &LOGGED)
                }
            });
        }
    }
    Ok(quote! {
        #(#items)*

        /// Address of an exported function by its exact symbol name.
        pub fn #lookup(name: &[u8]) -> Option<*const ::core::ffi::c_void> {
            match name {
                #(#arms)*
                _ => None,
            }
        }

        /// Names with a real implementation.
        pub const IMPLEMENTED: &[&str] = &[#(#done_names),*];
        /// Names exported as NOT_SUPPORTED stubs.
        pub const NOT_SUPPORTED: &[&str] = &[#(#stub_names),*];
    })
}

/// `name = StructName` (and optionally `filter { fnA, fnB }`; without it,
/// every function) → `pub struct StructName` with one
/// `Option<unsafe extern "C" fn(..) -> R>` field per function and
/// `unsafe fn load(resolve: impl FnMut(&CStr) -> *mut c_void) -> Self`.
/// Missing symbols stay `None`; nothing panics on them.
#[proc_macro]
pub fn driver_table(input: TokenStream) -> TokenStream {
    let inv = syn::parse_macro_input!(input as Invocation<ExportArgs>);
    match expand_table(inv) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand_table(inv: Invocation<ExportArgs>) -> syn::Result<TokenStream2> {
    let name = setting(&inv.args, "name")?;
    let mut fields = Vec::new();
    let mut loads = Vec::new();
    for sig in &inv.prototypes.0 {
        let ident = &sig.ident;
        let ret = &sig.output;
        let types: Vec<_> = sig
            .inputs
            .iter()
            .filter_map(|a| match a {
                FnArg::Typed(t) => Some(&t.ty),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let cname = syn::LitCStr::new(
            &std::ffi::CString::new(ident.to_string()).unwrap(),
            ident.span(),
        );
        fields.push(quote! {
            pub #ident: Option<unsafe extern "C" fn(#(#types),*) #ret>,
        });
        loads.push(quote! {
            #ident: {
                let p = resolve(#cname);
                if p.is_null() {
                    None
                } else {
                    // SAFETY: the symbol was exported under this name, whose
                    // ABI the pinned header fixes.
                    Some(unsafe { ::core::mem::transmute::<*mut ::core::ffi::c_void, _>(p) })
                }
            },
        });
    }
    Ok(quote! {
        #[allow(non_snake_case)]
        pub struct #name {
            #(#fields)*
        }

        impl #name {
            /// Resolves every function by name; absent ones are `None`.
            ///
            /// # Safety
            /// `resolve` must return null or the address of a function with
            /// the prototype the header gives that name.
            pub unsafe fn load(mut resolve: impl FnMut(&::core::ffi::CStr) -> *mut ::core::ffi::c_void) -> Self {
                #name {
                    #(#loads)*
                }
            }
        }
    })
}
