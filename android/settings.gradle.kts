// The Waybill Android library. Build the native library and the generated Kotlin
// bindings first: `./build-rust.sh` (needs the Android NDK and cargo-ndk; see README.md).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "waybill-android"
include(":waybill")
