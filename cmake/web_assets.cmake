# The trainer's dashboard, embedded into eddy_svc (included from the top-level CMakeLists.txt when
# EDDY_SERVICE=ON). web/package-lock.json pins the chart library (uPlot): `npm ci` installs it into
# <build>/web, again only when package.json or the lock file changes; then web/*.{html,js,css} and
# uPlot's dist files become byte arrays in <build>/generated/eddy_assets_gen.c (src/http/assets.h).
find_program(NPM_EXECUTABLE npm)
if(NOT NPM_EXECUTABLE)
  message(FATAL_ERROR "npm not found: the dashboard's chart library (web/package-lock.json) is "
                      "installed with npm at build time; install npm: ops/setup-deps")
endif()

set(EDDY_WEB_BUILD ${CMAKE_BINARY_DIR}/web)
set(EDDY_UPLOT_DIR ${EDDY_WEB_BUILD}/node_modules/uplot)
set(EDDY_UPLOT_FILES ${EDDY_UPLOT_DIR}/dist/uPlot.iife.min.js ${EDDY_UPLOT_DIR}/dist/uPlot.min.css
                     ${EDDY_UPLOT_DIR}/LICENSE)
add_custom_command(
  OUTPUT ${EDDY_WEB_BUILD}/npm-ci.stamp ${EDDY_UPLOT_FILES}
  COMMAND ${CMAKE_COMMAND} -DNPM=${NPM_EXECUTABLE} -DSRC=${CMAKE_SOURCE_DIR}/web -DDIR=${EDDY_WEB_BUILD}
          -P ${CMAKE_SOURCE_DIR}/cmake/npm_ci.cmake
  DEPENDS ${CMAKE_SOURCE_DIR}/web/package.json ${CMAKE_SOURCE_DIR}/web/package-lock.json
          ${CMAKE_SOURCE_DIR}/cmake/npm_ci.cmake
  COMMENT "npm ci: the dashboard's chart library (web/package-lock.json)"
  VERBATIM)

file(GLOB EDDY_WEB_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/web/*.html ${CMAKE_SOURCE_DIR}/web/*.js
     ${CMAKE_SOURCE_DIR}/web/*.css)
set(EDDY_ASSETS "")
foreach(f ${EDDY_WEB_SOURCES})
  get_filename_component(name ${f} NAME)
  list(APPEND EDDY_ASSETS "${name}=${f}")
endforeach()
list(APPEND EDDY_ASSETS "uPlot.iife.min.js=${EDDY_UPLOT_DIR}/dist/uPlot.iife.min.js"
     "uPlot.min.css=${EDDY_UPLOT_DIR}/dist/uPlot.min.css" "uPlot.LICENSE.txt=${EDDY_UPLOT_DIR}/LICENSE")
string(JOIN "|" EDDY_ASSETS_ARG ${EDDY_ASSETS})

set(EDDY_ASSETS_GEN ${CMAKE_BINARY_DIR}/generated/eddy_assets_gen.c)
add_custom_command(
  OUTPUT ${EDDY_ASSETS_GEN}
  COMMAND ${CMAKE_COMMAND} -DOUTPUT=${EDDY_ASSETS_GEN} -DASSETS=${EDDY_ASSETS_ARG}
          -P ${CMAKE_SOURCE_DIR}/cmake/embed_assets.cmake
  DEPENDS ${EDDY_WEB_SOURCES} ${EDDY_UPLOT_FILES} ${EDDY_WEB_BUILD}/npm-ci.stamp
          ${CMAKE_SOURCE_DIR}/cmake/embed_assets.cmake
  COMMENT "Embedding the dashboard (web/, uPlot) into eddy_svc"
  VERBATIM)
target_sources(eddy_svc PRIVATE ${EDDY_ASSETS_GEN})
