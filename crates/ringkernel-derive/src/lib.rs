//! Procedural macros for RingKernel.
//!
//! * `#[derive(RingMessage)]` implements `ringkernel::RingMessage` for a struct or enum:
//!   - payload codec: rkyv by default (the type also derives `rkyv::{Archive, Serialize,
//!     Deserialize}`), or plain data with `#[message(pod)]` (the type derives zerocopy's
//!     `IntoBytes`, `FromBytes` and `Immutable` and is `#[repr(C)]`);
//!   - type id: `#[message(type_id = 0x1001)]`, or, without it, a stable FNV-1a hash of the type's
//!     module path and name with bit 63 set (explicit ids must stay below 2^63);
//!   - `#[message(crate = "ringkernel_core")]` for code that depends on the core crate directly;
//!   - or the GPU word layout with `#[message(gpu)]` (the type also derives `GpuType`), which GPU
//!     handlers (WGSL) can read and write.
//! * `#[derive(GpuType)]` describes a struct's GPU word layout (`ringkernel_core::gpu`), for
//!   messages and for kernel state that lives on a GPU.
//! * `#[ring_kernel]` on a handler function registers it at link time (through `inventory`) so that
//!   `runtime.launch("name", ..)` finds it. Arguments: `name = "..."` (default: the function name).
//!   The function takes `&mut State` (a `Default` type), the message, and optionally
//!   `&mut Context<'_>`; its return value is sent back to the sender (see `HandlerOutput`).
//!   Several functions with the same kernel name form one kernel with several handlers.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{parse_macro_input, DeriveInput, Expr, ExprLit, FnArg, ItemFn, Lit, Pat, Type};

struct MessageAttrs {
    type_id: Option<u64>,
    pod: bool,
    gpu: bool,
    krate: syn::Path,
}

fn parse_message_attrs(input: &DeriveInput) -> syn::Result<MessageAttrs> {
    let mut out =
        MessageAttrs { type_id: None, pod: false, gpu: false, krate: syn::parse_quote!(::ringkernel) };
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("message")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("type_id") {
                let expr: Expr = meta.value()?.parse()?;
                let Expr::Lit(ExprLit { lit: Lit::Int(int), .. }) = &expr else {
                    return Err(syn::Error::new(
                        expr.span(),
                        "type_id must be an integer literal, e.g. 0x1001",
                    ));
                };
                let v: u64 = int.base10_parse()?;
                if v == 0 {
                    return Err(syn::Error::new(int.span(), "type_id 0 is reserved"));
                }
                if v >= 1 << 63 {
                    return Err(syn::Error::new(
                        int.span(),
                        "type_id must be below 2^63 (ids with bit 63 set are derived from type paths)",
                    ));
                }
                if out.type_id.replace(v).is_some() {
                    return Err(meta.error("type_id given twice"));
                }
                Ok(())
            } else if meta.path.is_ident("pod") {
                out.pod = true;
                Ok(())
            } else if meta.path.is_ident("gpu") {
                out.gpu = true;
                Ok(())
            } else if meta.path.is_ident("crate") {
                let s: syn::LitStr = meta.value()?.parse()?;
                out.krate = s.parse()?;
                Ok(())
            } else {
                Err(meta.error(
                    "unknown message attribute; expected `type_id = <int>`, `pod`, `gpu` or `crate = \"path\"`",
                ))
            }
        })?;
    }
    Ok(out)
}

/// Derives `RingMessage` (see the crate docs).
#[proc_macro_derive(RingMessage, attributes(message))]
pub fn derive_ring_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    derive_inner(input).unwrap_or_else(|e| e.to_compile_error()).into()
}

fn derive_inner(input: DeriveInput) -> syn::Result<TokenStream2> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "RingMessage cannot be derived for generic types: each message type needs one fixed type id",
        ));
    }
    if let syn::Data::Union(u) = &input.data {
        return Err(syn::Error::new(u.union_token.span, "RingMessage cannot be derived for unions"));
    }
    let attrs = parse_message_attrs(&input)?;
    let name = &input.ident;
    let krate = &attrs.krate;
    let name_str = name.to_string();
    let type_id = match attrs.type_id {
        Some(v) => quote!(#v),
        None => {
            quote!(#krate::message::type_id_from_path(concat!(module_path!(), "::", #name_str)))
        }
    };
    if attrs.pod && attrs.gpu {
        return Err(syn::Error::new(
            Span::call_site(),
            "`pod` and `gpu` are two different payload codecs; pick one",
        ));
    }
    let (encode, decode) = if attrs.gpu {
        (
            quote!(#krate::gpu::encode(self, <Self as #krate::message::RingMessage>::type_name(), out)),
            quote!(#krate::gpu::decode(bytes, <Self as #krate::message::RingMessage>::type_name())),
        )
    } else {
        let codec =
            if attrs.pod { quote!(#krate::message::pod) } else { quote!(#krate::message::rkyv_codec) };
        (quote!(#codec::encode(self, out)), quote!(#codec::decode(bytes)))
    };
    Ok(quote! {
        impl #krate::message::RingMessage for #name {
            #[inline]
            fn message_type() -> u64 {
                const ID: u64 = #type_id;
                ID
            }
            fn type_name() -> &'static str {
                concat!(module_path!(), "::", #name_str)
            }
            #[inline]
            fn encode_payload(&self, out: &mut [u8]) -> ::core::result::Result<usize, #krate::message::EncodeError> {
                #encode
            }
            #[inline]
            fn decode_payload(bytes: &[u8]) -> ::core::result::Result<Self, #krate::message::DecodeError> {
                #decode
            }
        }
    })
}

/// Derives `ringkernel::gpu::GpuType`: the GPU word layout of a struct with named fields of type
/// `u32`, `i32`, `f32`, `u64`, `i64`, `[T; N]` or `Vec<T>` of those (see `ringkernel_core::gpu`).
#[proc_macro_derive(GpuType, attributes(message))]
pub fn derive_gpu_type(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    gpu_type_inner(input).unwrap_or_else(|e| e.to_compile_error()).into()
}

fn gpu_type_inner(input: DeriveInput) -> syn::Result<TokenStream2> {
    let attrs = parse_message_attrs(&input)?;
    let krate = &attrs.krate;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(input.generics.span(), "GpuType cannot be derived for generic types"));
    }
    let syn::Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(Span::call_site(), "GpuType can only be derived for structs"));
    };
    let fields: Vec<_> = match &data.fields {
        syn::Fields::Named(n) => n.named.iter().collect(),
        syn::Fields::Unit => Vec::new(),
        syn::Fields::Unnamed(u) => {
            return Err(syn::Error::new(
                u.span(),
                "GpuType needs named fields (GPU structs name every field)",
            ))
        }
    };
    let name = &input.ident;
    let name_str = name.to_string();
    let idents: Vec<_> = fields.iter().map(|f| f.ident.clone().expect("named")).collect();
    let names: Vec<_> = idents.iter().map(|i| i.to_string()).collect();
    let tys: Vec<_> = fields.iter().map(|f| &f.ty).collect();
    Ok(quote! {
        impl #krate::gpu::GpuType for #name {
            const GPU_NAME: &'static str = #name_str;
            const GPU_FIELDS: &'static [#krate::gpu::GpuField] = &[
                #( #krate::gpu::GpuField {
                    name: #names,
                    kind: <#tys as #krate::gpu::GpuFieldType>::KIND,
                }, )*
            ];
            fn gpu_write(&self, w: &mut #krate::gpu::GpuWriter<'_>)
                -> ::core::result::Result<(), #krate::message::EncodeError> {
                #( w.field(&self.#idents)?; )*
                let _ = w;
                Ok(())
            }
            fn gpu_read(r: &mut #krate::gpu::GpuReader<'_>)
                -> ::core::result::Result<Self, #krate::message::DecodeError> {
                let _ = &r;
                Ok(Self { #( #idents: r.field()?, )* })
            }
        }
    })
}

/// Registers a handler function as (part of) a kernel (see the crate docs).
#[proc_macro_attribute]
pub fn ring_kernel(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    let attr = TokenStream2::from(attr);
    kernel_inner(attr, func).unwrap_or_else(|e| e.to_compile_error()).into()
}

fn kernel_inner(attr: TokenStream2, func: ItemFn) -> syn::Result<TokenStream2> {
    let mut name: Option<String> = None;
    let mut krate: syn::Path = syn::parse_quote!(::ringkernel);
    if !attr.is_empty() {
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("name") {
                let s: syn::LitStr = meta.value()?.parse()?;
                if s.value().is_empty() {
                    return Err(syn::Error::new(s.span(), "kernel name must not be empty"));
                }
                name = Some(s.value());
                Ok(())
            } else if meta.path.is_ident("crate") {
                let s: syn::LitStr = meta.value()?.parse()?;
                krate = s.parse()?;
                Ok(())
            } else {
                Err(meta.error("unknown ring_kernel argument; expected `name = \"...\"`"))
            }
        });
        syn::parse::Parser::parse2(parser, attr)?;
    }
    let sig = &func.sig;
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new(
            a.span,
            "ring_kernel handlers run on the kernel's executor and cannot be async",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(sig.generics.span(), "ring_kernel handlers cannot be generic"));
    }
    let args: Vec<_> = sig.inputs.iter().collect();
    if !(2..=3).contains(&args.len()) {
        return Err(syn::Error::new(
            sig.inputs.span(),
            "a ring_kernel handler takes (state: &mut State, msg: Message) or (state: &mut State, msg: Message, ctx: &mut Context<'_>)",
        ));
    }
    let typed = |a: &FnArg| -> syn::Result<Type> {
        match a {
            FnArg::Receiver(r) => {
                Err(syn::Error::new(r.span(), "ring_kernel handlers are free functions, not methods"))
            }
            FnArg::Typed(t) => {
                if !matches!(&*t.pat, Pat::Ident(_) | Pat::Wild(_)) {
                    return Err(syn::Error::new(t.pat.span(), "use a plain argument name"));
                }
                Ok((*t.ty).clone())
            }
        }
    };
    let state_ty = match typed(args[0])? {
        Type::Reference(r) if r.mutability.is_some() => (*r.elem).clone(),
        other => {
            return Err(syn::Error::new(
                other.span(),
                "the first argument must be the kernel state, `&mut State`",
            ))
        }
    };
    let msg_ty = typed(args[1])?;
    if let Type::Reference(r) = &msg_ty {
        return Err(syn::Error::new(
            r.span(),
            "the message is passed by value (it is decoded for the handler)",
        ));
    }
    if args.len() == 3 {
        match typed(args[2])? {
            Type::Reference(r) if r.mutability.is_some() => {}
            other => {
                return Err(syn::Error::new(other.span(), "the third argument must be `&mut Context<'_>`"))
            }
        }
    }
    let fn_name = &sig.ident;
    let kernel_name = name.unwrap_or_else(|| fn_name.to_string());
    let call = if args.len() == 3 {
        quote!(#fn_name(state, msg, ctx))
    } else {
        quote!({ let _ = ctx; #fn_name(state, msg) })
    };
    let span = Span::call_site();
    Ok(quote_spanned! {span=>
        #func

        const _: () = {
            fn __ringkernel_build() -> ::core::result::Result<#krate::runtime::KernelDef, #krate::Error> {
                #krate::runtime::KernelDef::new::<#state_ty>(#kernel_name).try_on(
                    |state: &mut #state_ty, msg: #msg_ty, ctx: &mut #krate::runtime::Context<'_>| #call,
                )
            }
            #krate::runtime::inventory::submit! {
                #krate::runtime::KernelRegistration { kernel: #kernel_name, build: __ringkernel_build }
            }
        };
    })
}
