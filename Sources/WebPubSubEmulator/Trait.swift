// The emulator is built on SwiftNIO, which this package resolves only under its `Emulator` trait
// (on by default; see Package.swift). A package that depends on swift-webpubsub with `traits: []`
// gets the client libraries alone and cannot use this module.
#if !Emulator
#error("WebPubSubEmulator needs the Emulator trait of swift-webpubsub: depend on it with its default traits or traits: [\"Emulator\"]")
#endif
